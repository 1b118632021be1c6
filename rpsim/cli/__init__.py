"""The rpsim command line: the only place that prints, writes files or exits."""

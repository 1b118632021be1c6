"""rpexec: replays an rpsim plan with torch on real GPUs (or on CPU, for tests) and records a measured
trace in rpsim's schema. Imports rpsim's IR and trace; rpsim never imports rpexec."""

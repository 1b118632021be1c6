from rpsim.cli.main import entry

entry()

from chatvector.cli import run

run()

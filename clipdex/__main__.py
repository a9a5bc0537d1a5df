from clipdex.cli.app import entry

entry()

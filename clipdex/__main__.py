from clipdex.cli.app import main

main()

from dvqa.cli.main import main

main()

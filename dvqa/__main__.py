from dvqa.cli import main

main()

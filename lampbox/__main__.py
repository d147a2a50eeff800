from lampbox.cli import main

main()

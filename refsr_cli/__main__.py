from refsr_cli.cli import main

main()

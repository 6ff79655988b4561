from pistio.cli.main import main

main()

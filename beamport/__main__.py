from beamport.cli.main import main

main()

from pnode_zoo.cli.app import main

main()

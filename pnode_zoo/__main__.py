from pnode_zoo.cli import main

main()

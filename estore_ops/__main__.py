from estore_ops.cli import main

main()

"""One module per CLI sub-command: ``register(subparsers)`` adds its parser, ``run(args)`` does the work."""

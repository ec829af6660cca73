"""The commands: ``honeypot-etl`` (`etl.cli.app`) and each subcommand's options (`refresh`,
`status`, `pending`, `doctor`), on the shared plumbing of `etl.cli.options`. They parse options
and call the library; nothing is imported here, so ``--help`` stays quick.
"""

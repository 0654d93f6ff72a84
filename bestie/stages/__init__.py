"""Stage entry points: ``add_arguments(parser)`` and ``run(args)`` per command.

The only code that reads and writes files; everything else is a pure library.
"""

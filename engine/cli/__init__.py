"""The command line: argument parsing, the consoles that print a run, `show`, the docs index."""

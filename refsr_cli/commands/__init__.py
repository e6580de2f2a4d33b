"""One module per subcommand. Each defines ``command`` (a ``click.Command``); cli.py registers it.

Commands parse options, read defaults from :func:`refsr_cli.cli.pipeline` (what earlier chained
stages produced), call a plain library function, and record what they produced for later stages.
"""

"""Command-line interface (typer). Heavy imports live inside the commands."""

"""The chained group itself: --help, --version, one-line errors, quiet mode."""
import click
from click.testing import CliRunner

from refsr_cli import __version__
from refsr_cli.cli import main


def test_version_and_help():
    runner = CliRunner()
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "prepare" in result.output and "Stages chain" in result.output


def test_every_subcommand_has_help_with_an_example():
    runner = CliRunner()
    for name, command in main.commands.items():
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "refsr " in result.output, f"`refsr {name} --help` shows no worked example"


def test_unknown_command_is_a_usage_error():
    result = CliRunner().invoke(main, ["no-such-stage"])
    assert result.exit_code == 2


def test_group_is_chained():
    assert isinstance(main, click.Group) and main.chain


def test_atomic_writes_get_normal_file_permissions(tmp_path):
    """Outputs are not left with mkstemp's owner-only 0600 mode."""
    import os

    import torch

    from refsr_cli.data.image_io import write_image

    umask = os.umask(0o022)
    try:
        write_image(tmp_path / "a.png", torch.rand(3, 8, 8))
    finally:
        os.umask(umask)
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o644

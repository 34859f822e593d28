"""`modelcache operator --agent-tolerations`: a list the API server would refuse stops the
operator before it starts, with the entry and the problem named."""

from __future__ import annotations

from typer.testing import CliRunner

from modelcache.cli.main import app


def test_a_bad_toleration_is_refused_before_the_operator_starts() -> None:
    result = CliRunner().invoke(
        app,
        [
            "operator",
            "--agent-tolerations",
            '[{"key": "nvidia.com/gpu", "operator": "Exists"}, {"key": "a", "operator": "In"}]',
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 2, result.output
    assert "--agent-tolerations" in result.output
    assert "tolerations[1].operator: 'In' is not Exists or Equal" in " ".join(
        line.strip(" │") for line in result.output.splitlines()
    )


def test_the_help_names_the_option() -> None:
    result = CliRunner().invoke(app, ["operator", "--help"])
    assert result.exit_code == 0
    assert "--agent-tolerations" in result.output


def test_a_bad_node_selector_is_refused_before_the_operator_starts() -> None:
    result = CliRunner().invoke(
        app, ["operator", "--agent-node-selector", '{"gpu": true}'], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2, result.output
    assert "--agent-node-selector" in result.output
    assert "nodeSelector['gpu']: a string" in " ".join(
        line.strip(" │") for line in result.output.splitlines()
    )

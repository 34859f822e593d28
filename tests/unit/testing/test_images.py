"""What goes into the project's images, and what makes the harness rebuild one."""

from __future__ import annotations

from pathlib import Path

from modelcache.testing.images import (
    PROJECT_IMAGES,
    REPO,
    STUDIO,
    build_context,
    context_key,
)


def test_the_images_carry_the_package_but_not_the_test_harness() -> None:
    for image in (*PROJECT_IMAGES, STUDIO):
        context = build_context(REPO, image)
        assert image.dockerfile in context
        assert "modelcache/agent/__init__.py" in context
        assert "modelcache/cli/main.py" in context
        assert not [rel for rel in context if rel.startswith("modelcache/testing")]
        assert not [rel for rel in context if "__pycache__" in rel or rel.endswith(".pyc")]
    assert "examples/studio/__main__.py" in build_context(REPO, STUDIO)


def test_a_change_to_the_harness_rebuilds_nothing_a_change_to_the_package_does(
    tmp_path: Path,
) -> None:
    image = PROJECT_IMAGES[0]
    for rel in (image.dockerfile, "pyproject.toml", "README.md"):
        (tmp_path / rel).write_text(rel)
    for rel in ("modelcache/agent/run.py", "modelcache/testing/cluster.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("one")
    before = context_key("base", build_context(tmp_path, image))

    (tmp_path / "modelcache/testing/cluster.py").write_text("two")
    assert context_key("base", build_context(tmp_path, image)) == before

    (tmp_path / "modelcache/agent/run.py").write_text("two")
    assert context_key("base", build_context(tmp_path, image)) != before
    assert context_key("other base", build_context(tmp_path, image)) != context_key(
        "base", build_context(tmp_path, image)
    )

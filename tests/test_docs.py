"""Every command in the README and in docs/{workflow,cpu,accuracy,ray}.md, run as written, in order, in one copy of
the seed's layout (docs/ascend.md and docs/labelmaps.md have their own tests).

Only what cannot run here is replaced: ``atc`` by the fake ``tests/fake_ascend/fake_atc.py`` and ``python3 -m
ais_bench`` by the same line through ``pix2pixhd-deploy infer`` with the current ais_bench line's fake (no CANN,
no NPU); ``make`` lines are what CI and the demo test run. Sizes: the commands fix 1024x2048, the test's checkpoint
and maps are 64x128, so ``1024,2048`` becomes ``64,128`` and an export gets ``--height 64 --width 128``.
"""
from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from pix2pixhd_deploy.data.synthetic import write_cityscapes_split

FAKES = Path(__file__).resolve().parent / "fake_ascend"
DOCS = ["README.md", "docs/workflow.md", "docs/cpu.md", "docs/accuracy.md", "docs/ray.md"]


def doc_commands(doc: str):
    blocks = re.findall(r"```sh\n(.*?)```", (REPO / doc).read_text(), flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith(("#", "make "))]


def as_run_here(command: str):
    """(argv, env) that runs ``command`` here; see the module docstring."""
    from test_ais_bench_contract import fake_env

    argv = [a.replace("1024,2048", "64,128") for a in shlex.split(command)]
    env = None
    if argv[0].startswith(".venv/bin/"):
        argv[0] = argv[0][len(".venv/bin/"):]
    if argv[0] == "atc":
        argv = [sys.executable, str(FAKES / "fake_atc.py"), *argv[1:]]
    elif argv[:3] == ["python3", "-m", "ais_bench"]:
        argv, env = ["pix2pixhd-deploy", "infer", *argv[3:]], fake_env("current")
    elif argv[0] == "python3":
        argv = argv[1:]
    if argv[:2] == ["pix2pixhd-deploy", "export"] or argv[0] == "pix2pixhd_pth2onnx.py":
        argv += ["--height", "64", "--width", "128"]
    return argv, env


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from conftest import SMALL_LOCAL

    from pix2pixhd_deploy.model.network import random_generator, save_checkpoint

    root = tmp_path_factory.mktemp("docs")
    write_cityscapes_split(root / "datasets" / "gtFine" / "val", 3, height=64, width=128, city="bonn")
    save_checkpoint(random_generator(SMALL_LOCAL, seed=1),
                    root / "pix2pixHD" / "checkpoints" / "label2city_1024p" / "latest_net_G.pth")
    return root


@pytest.mark.parametrize("doc", DOCS)
def test_doc_commands_run(doc, workdir):
    commands = doc_commands(doc)
    assert commands, f"{doc} has no commands"
    if doc != "README.md" and not (workdir / "results").is_dir():  # the docs start where the README leaves you
        commands = doc_commands("README.md") + commands
    for command in commands:
        argv, env = as_run_here(command)
        proc = run_cli(argv, cwd=workdir, env=env, check=False)
        assert proc.returncode == 0, (doc, command, proc.stdout[-2000:], proc.stderr[-2000:])
    if doc == "README.md":
        assert len(list((workdir / "results" / "images").glob("*_synthesized_image.png"))) == 3
        assert len(list((workdir / "result" / "bs1generated").glob("*.png"))) == 3


def test_every_doc_is_linked_from_the_readme():
    readme = (REPO / "README.md").read_text()
    for doc in sorted((REPO / "docs").glob("*.md")):
        assert f"docs/{doc.name}" in readme, doc.name

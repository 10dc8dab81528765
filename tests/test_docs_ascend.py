"""Every command in docs/ascend.md, run as written in a small copy of the seed's layout.

What cannot run here is replaced, and only that: ``atc`` by the fake ``tests/fake_ascend/fake_atc.py`` (no CANN
here) and ais_bench by the current line's fake (no NPU). Sizes: the commands fix 1024x2048; the test's checkpoint
and maps are 64x128, so ``1024``/``2048`` in the atc line and ``--height/--width`` of export are rewritten to that.
"""
from __future__ import annotations

import re
import shlex
import shutil
import sys
from pathlib import Path

from conftest import REPO, run_cli

from pix2pixhd_deploy.data.synthetic import write_cityscapes_split

DOC = REPO / "docs" / "ascend.md"
FAKES = Path(__file__).resolve().parent / "fake_ascend"


def doc_commands():
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_docs_ascend_commands_run(tmp_path, small_checkpoint):
    from test_ais_bench_contract import fake_env

    write_cityscapes_split(tmp_path / "val", 3, height=64, width=128, city="bonn")
    run_cli(["datasets_deal.py", "./pix2pixHD/datasets/cityscapes/test_inst",
             "./pix2pixHD/datasets/cityscapes/test_label", "./val"], cwd=tmp_path)
    ckpt = tmp_path / "pix2pixHD" / "checkpoints" / "label2city_1024p"
    ckpt.mkdir(parents=True)
    shutil.copy(small_checkpoint / "latest_net_G.pth", ckpt)
    commands = doc_commands()
    assert any(c.startswith("atc ") for c in commands) and any(c.startswith("pix2pixhd-deploy compare") for c in
                                                               commands)
    for command in commands:
        argv = shlex.split(command)
        if argv[0] == "atc":  # CANN's compiler: the fake checks the line and writes the "OM"
            argv = [sys.executable, str(FAKES / "fake_atc.py"), *argv[1:]]
            argv = [a.replace("1024,2048", "64,128") for a in argv]
        elif argv[0] == "pix2pixhd-deploy" and argv[1] == "export":
            argv += ["--height", "64", "--width", "128"]
        elif argv[0] == "python3":
            argv = argv[1:]
        proc = run_cli(argv, cwd=tmp_path, env=fake_env("current"), check=False)
        assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
        if argv[0] == "pix2pixhd-deploy" and argv[1] == "export":  # the doc's atc line is the one export prints
            atc = next(c for c in commands if c.startswith("atc "))
            assert atc.replace("pix2pixhd.onnx", "") .replace("1024,2048", "64,128") in proc.stdout.replace(
                str(tmp_path) + "/", "").replace("pix2pixhd.onnx", "")
    assert len(list((tmp_path / "result" / "bs1generated").iterdir())) == 3

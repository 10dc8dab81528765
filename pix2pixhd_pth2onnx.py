"""The seed's ``pix2pixhd_pth2onnx.py``, kept so its command works as written:
``python pix2pixhd_pth2onnx.py --load_pretrain ./pix2pixHD/checkpoints/label2city_1024p/ --output_file pix2pixhd.onnx``.

Same as ``pix2pixhd-deploy export --load_pretrain ... --output_file ...``: opset 11, dynamic batch, 1024x2048, the
graph checked against PyTorch before it is kept, and the atc commands printed; see ``--help`` for the options.
"""
import os
import sys

try:
    from pix2pixhd_deploy.cli.main import run_script
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))
    from pix2pixhd_deploy.cli.main import run_script

if __name__ == "__main__":
    raise SystemExit(run_script("export", "pix2pixhd_pth2onnx.py"))

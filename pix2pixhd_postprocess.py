"""The seed's ``pix2pixhd_postprocess.py``, kept so its commands work as written: ``python pix2pixhd_postprocess.py BIN_DIR OUT_DIR``.

Same as ``pix2pixhd-deploy postprocess BIN_DIR OUT_DIR``; see ``--help``.
"""
import os
import sys

try:
    from pix2pixhd_deploy.cli.main import run_script
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))
    from pix2pixhd_deploy.cli.main import run_script

if __name__ == "__main__":
    raise SystemExit(run_script("postprocess", "pix2pixhd_postprocess.py"))

"""The seed's ``datasets_deal.py``, kept so its commands work as written: ``python datasets_deal.py TEST_INST_DIR TEST_LABEL_DIR GTFINE_SPLIT_DIR``.

Same as ``pix2pixhd-deploy convert TEST_INST_DIR TEST_LABEL_DIR GTFINE_SPLIT_DIR``; see ``--help``.
"""
import os
import sys

try:
    from pix2pixhd_deploy.cli.main import run_script
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))
    from pix2pixhd_deploy.cli.main import run_script

if __name__ == "__main__":
    raise SystemExit(run_script("convert", "datasets_deal.py"))

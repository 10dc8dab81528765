"""pix2pixhd-deploy: NVIDIA pix2pixHD's label2city generator, exact and fast, on CPUs, NVIDIA GPUs and Ascend NPUs.

Stages, one module each, data flowing one way: ``labels`` -> ``dataset`` -> ``encoding`` -> ``network`` ->
``runners`` -> ``infer`` -> ``postprocess``; ``demo`` chains them; ``cli`` is the thin command line.
"""
__version__ = "0.1.0"

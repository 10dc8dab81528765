"""``pix2pixhd-deploy serve``: the generator behind an HTTP endpoint (``docs/serve.md``).

Modules, in the order a request meets them: :mod:`.options` (the flags), :mod:`.server` (uvicorn) or
:mod:`.ray_serve` (Ray Serve replicas), :mod:`.app` (the FastAPI routes), :mod:`.uploads` (uploaded maps through
:mod:`~pix2pixhd_deploy.data.labelmaps`), :mod:`.batcher` (dynamic batching), :mod:`.model` (the engines, as ``run``
chooses them), :mod:`.state` and :mod:`.metrics`. ``static/`` holds the page served at ``/``.

FastAPI, uvicorn, prometheus-client and python-multipart come with ``pip install 'pix2pixhd-deploy[serve]'``; they
are imported only here, so the rest of the package works without them.
"""

"""The OpenFaaS image classifier whose request logs feed the SLO contracts.

``function/handler.py`` (the python3-http template's entry point) is a thin adapter over this
package. Modules, lightest first — only ``model`` and ``handler``'s loading path import torch:

- ``config``     typed settings from the function's environment (``MODEL_PATH``, ``MODEL_ARCH``…)
- ``logline``    the one-JSON-line-per-request log, built from :mod:`mlobs_function.logschema`
- ``imaging``    bounded image decoding and the resize/crop/normalise preprocessing
- ``model``      architectures by name (torchvision's, plus the local ``tiny_cnn``), loading, top-k
- ``handler``    ``FunctionHandler.handle(event, context)``: validation, status codes, latency, log
- ``serve``      the template's Flask + waitress shape, for local serving, tests and the demo
- ``synthetic``  the coloured-shape images the tiny model learns and the traffic generator sends
- ``train``      ``python -m mlobs_function.train``: the tiny model, in seconds, offline
- ``traffic``    ``python -m mlobs_function.traffic``: a request mix → log file and Loki
"""

"""Serving: a CLI chat, upstream's controller + model worker HTTP API, and a gradio 6 demo.

* ``python -m llava.serve.cli --model-path CKPT --image-file IMG``: streaming terminal chat.
* ``python -m llava.serve.gradio_web_server --model-path CKPT``: the web demo in one process.
* ``python -m llava.serve.controller`` + ``python -m llava.serve.model_worker`` +
  ``python -m llava.serve.gradio_web_server --controller-url URL``: upstream's three-process
  deployment (several workers, several GPUs), with the same endpoints and stream format.

All three call the model through :mod:`llava.serve.inference` (``load_pretrained_model`` and
``model.generate``, like a user would). Modules here are imported explicitly by their users;
this package imports nothing, so ``import llava.serve.cli`` does not pull in gradio.
"""

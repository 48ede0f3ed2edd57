"""A local web page to segment one's own video: ``wavecl serve`` and :func:`build_app`.

Built on Gradio, the library most model demos of the field use: it gives the file upload, the request
queue with each waiting user's position, the progress bar and a page that can be mounted in a
notebook or in another ASGI server.

The page takes a video file (mp4, webm, mov, ...), a zip of frames or a folder of frames (or one of
a few generated example clips) and one or more sentences, one per line. It runs
:class:`wavecl.inference.VideoPredictor` (every sentence in one batch) through
:func:`wavecl.inference.prediction_folder.write_predictions`, the writer of ``wavecl predict``, and shows the overlay
video (H.264 yuv420p, even size, which browsers play), the contact sheet, a colour legend per
sentence and a zip of the masks (a PNG per frame and sentence, named as ``wavecl predict`` names them).

One module per job:

- :mod:`~wavecl.app.config`: :class:`AppConfig`, the page's limits around an
  :class:`~wavecl.inference_settings.InferenceSettings`;
- :mod:`~wavecl.app.uploads`: what the user gave (sentences, video, zip or folder of frames), checked;
- :mod:`~wavecl.app.workspace`: the app's temporary folder and one folder per request;
- :mod:`~wavecl.app.results`: the masks zip, the colour legend and the summary the page shows;
- :mod:`~wavecl.app.segmenter`: the page's work without the page (:class:`Segmenter`);
- :mod:`~wavecl.app.page`: the Gradio page (:func:`build_app`, :func:`serve`).
"""

from wavecl.app.config import AppConfig
from wavecl.app.page import build_app, launch_options, serve
from wavecl.app.segmenter import Segmenter
from wavecl.app.uploads import InputError

__all__ = ["AppConfig", "InputError", "Segmenter", "build_app", "launch_options", "serve"]

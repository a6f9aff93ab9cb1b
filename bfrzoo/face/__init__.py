"""Whole photos: face detection with 5 landmarks, similarity alignment, paste-back, and the photo pipeline.

* :mod:`bfrzoo.face.align`: the 5-point FFHQ template, the least-squares similarity fit, batched warps (kornia).
* :mod:`bfrzoo.face.detect`: detectors (facexlib's RetinaFace when its weights are present, else facenet-pytorch's
  MTCNN, whose weights ship in its wheel), tiny/profile filters, face selection.
* :mod:`bfrzoo.face.paste`: feathered and parsing-based masks, blending a restored face back into a photo.
* image files are read and written by :mod:`bfrzoo.photo_io` (EXIF orientation, grayscale, alpha, 16 bit; the
  one decoder of the package, also under :func:`bfrzoo.io.read_image`).
* :mod:`bfrzoo.face.photo`: :func:`restore_photo`, the whole pipeline for one photo (what
  :meth:`bfrzoo.interface.Restorer.restore_photo` and ``bfrzoo restore`` call).

Nothing heavy is imported here: kornia, facexlib and facenet-pytorch load on first use.
"""

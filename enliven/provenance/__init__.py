"""Provenance of what enliven makes: an invisible watermark in every frame, C2PA manifests on files.

``watermark.Watermarker().embed(frame)`` marks a frame; ``watermark.detect(frame)`` reads one;
``verify.verify_file(path)`` checks an image or a video; ``c2pa_sign.sign_file`` signs a file.
"""

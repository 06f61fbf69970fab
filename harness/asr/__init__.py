"""ASR distillation track: Whisper-style teacher, Distil-Whisper-style students, ASKD.

Modules: :mod:`tokenizer` (character tokenizer in the HF tokenizer-files format),
:mod:`teacher` (small Whisper trained here, or a local Whisper checkpoint folder),
:mod:`student` (decoder cut to maximally spaced teacher layers), :mod:`objectives`
(``ce``, ``kd``, ``askd``), :mod:`data` (manifest -> log-mel batches), :mod:`train`
(one run), :mod:`evaluate` (WER, greedy/beam decoding, latency), :mod:`study` (the
``{ce, kd, askd} x seeds`` study, ``askd.json``/``askd.csv`` and the WER-vs-speed figure).
"""

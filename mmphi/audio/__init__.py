"""The audio input path: decode any common audio format, then transcribe speech with Whisper.

    from mmphi.audio import Transcriber
    text = Transcriber().transcribe("question.mp3").text   # bundled Whisper tiny.en, offline

Errors a caller should show the user: :class:`AudioError` (unusable input) and its subclass
:class:`NoSpeechError` (the audio holds no speech).
"""

from mmphi.audio.asr import NoSpeechError, Transcriber, Transcript
from mmphi.audio.decode import SAMPLE_RATE, AudioError, load_audio

__all__ = ["SAMPLE_RATE", "AudioError", "NoSpeechError", "Transcriber", "Transcript", "load_audio"]

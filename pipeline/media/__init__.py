"""Stage one's bottom: the only PyAV reader (frames by time stamp, audio at 16 kHz), the decoder pool and generated media."""

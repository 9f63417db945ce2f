"""Project-wide constants: label names, rates and defaults, each with the reason for its value."""

from __future__ import annotations

# The 19 PercePiano perceptual dimensions, in label-file order (labels/label_names.csv).
# Each label is a mean rating on a 1-7 scale divided by 7, so it lies in [1/7, 1].
DIMENSIONS: tuple[str, ...] = (
    "Timing_Stable_Unstable",
    "Articulation_Short_Long",
    "Articulation_Soft_cushioned_Hard_solid",
    "Pedal_Sparse/dry_Saturated/wet",
    "Pedal_Clean_Blurred",
    "Timbre_Even_Colorful",
    "Timbre_Shallow_Rich",
    "Timbre_Bright_Dark",
    "Timbre_Soft_Loud",
    "Dynamic_Sophisticated/mellow_Raw/crude",
    "Dynamic_Little_dynamic_range_Large_dynamic_range",
    "Music_Making_Fast_paced_Slow_paced",
    "Music_Making_Flat_Spacious",
    "Music_Making_Disproportioned_Balanced",
    "Music_Making_Pure_Dramatic/expressive",
    "Emotion_&_Mood_Optimistic/pleasant_Dark",
    "Emotion_&_Mood_Low_Energy_High_Energy",
    "Emotion_&_Mood_Honest_Imaginative",
    "Interpretation_Unsatisfactory/doubtful_Convincing",
)
# Number of perceptual dimensions predicted by every model head.
N_DIMS: int = len(DIMENSIONS)
# Lowest and highest possible label value (rating 1/7 and 7/7).
LABEL_MIN: float = 1.0 / 7.0
LABEL_MAX: float = 1.0

# Audio sample rate: MuQ and the rendered corpus both use 24 kHz mono.
SAMPLE_RATE: int = 24_000
# Frames per second of the continuous MIDI curves (S3): 20 fps resolves 50 ms onsets
# while keeping a 40 s PercePiano segment at 800 frames.
FEATURE_FRAME_RATE: int = 20
# A pair whose label difference is below this is "ambiguous" and left out of pairwise
# accuracy and ranking losses: it is about a third of the mean rater std on the /7 scale.
AMBIGUOUS_THRESHOLD: float = 0.05
# Default seed for everything random (folds, demo corpus, training).
DEFAULT_SEED: int = 42
# MIDI control change number of the sustain pedal, and the value at which it counts as down.
SUSTAIN_CC: int = 64
PEDAL_DOWN_THRESHOLD: int = 64
# Data tiers: labelled, competition placements, several performances of one piece, unlabelled.
TIERS: tuple[str, ...] = ("T1", "T2", "T3", "T4")

# The statistics vector's columns, here below every layer that reads them (symbolic/stats.py computes the
# vector; the stats store, the wide part and the score-conditioned fusions read its columns).
# Each statistic is a summary a piano teacher would name; the baseline is only as strong as these.
STAT_NAMES: tuple[str, ...] = (
    "log_duration_s",
    "notes_per_s",
    "velocity_mean",
    "velocity_std",
    "velocity_p90_minus_p10",
    "log_ioi_mean",
    "log_ioi_std",
    "ioi_cv",
    "log_note_duration_mean",
    "legato_ratio_mean",
    "pitch_mean",
    "pitch_std",
    "polyphony_mean",
    "pedal_down_fraction",
    "pedal_changes_per_s",
    "velocity_slope",
    "top_voice_velocity_minus_mean",
    "chord_onset_spread_ms",
)
# Score-relative statistics: how a performance departs from its score (symbolic/score_stats.py).
SCORE_STAT_NAMES: tuple[str, ...] = (
    "log_tempo_ratio",
    "local_tempo_std",
    "local_tempo_jitter",
    "tempo_trend",
    "final_ritardando",
    "onset_deviation_ms",
    "chord_asynchrony_ms",
    "articulation_log_mean",
    "articulation_log_std",
    "staccato_share",
    "overlap_share",
    "velocity_score_corr",
    "velocity_score_slope",
    "velocity_range_ratio",
    "extra_note_share",
    "missed_note_share",
)
# The full statistics vector: the performance on its own, then relative to its score, then a flag
# saying whether the score part was measured (1) or left at zeros (no score, or it did not align).
ALL_STAT_NAMES: tuple[str, ...] = STAT_NAMES + SCORE_STAT_NAMES + ("score_aligned",)
# Columns of the score part (score-relative statistics and the flag) in the full vector.
SCORE_COLUMNS: slice = slice(len(STAT_NAMES), len(ALL_STAT_NAMES))

# What `pianoeval score` takes (steps.score).
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg"}
MIDI_SUFFIXES = {".mid", ".midi"}
# Inputs shorter than this carry too little music to judge; longer ones are cut into segments
# by the user for now (PercePiano segments are 4-16 bars).
MIN_SECONDS, MAX_SECONDS = 2.0, 600.0
# TransKun 2.0's input rate: reading the file straight at this rate avoids a round trip through the
# project's 24 kHz, which would drop the partials above 12 kHz that the model was trained with.
TRANSCRIPTION_SAMPLE_RATE: int = 44_100

# The symbolic encoders with a wide & deep form (`s3`) beside their deep-only one (`s3_deep`): the
# models `symbolic.deep_start` acts on. Here, not in the registry, so that config code needs no torch.
SYMBOLIC_ENCODERS: tuple[str, ...] = ("s1", "s2", "s3")
# A fusion variant's score-conditioned twin (`f1_score`): it shares the variant's `training.by_model` entry.
SCORE_SUFFIX = "_score"

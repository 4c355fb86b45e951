"""Write a composed song as a type-1 Standard MIDI File (one track per instrument)."""

from __future__ import annotations

import os

import mido

from .song import TICKS_PER_BEAT, Song
from .theory import NOTE_NAMES


def song_to_midi(song: Song, names: dict[int, str] | None = None) -> mido.MidiFile:
    """``names`` maps an instrument's channel to a track name (defaults to part/style)."""
    mid = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    meta = mido.MidiTrack()
    meta.append(mido.MetaMessage("track_name", name="tempo map", time=0))
    meta.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(song.tempo), time=0))
    meta.append(mido.MetaMessage("time_signature", numerator=song.beats_per_bar, denominator=4, time=0))
    minor = song.key.mode in ("minor", "dorian")
    # Drums need no bank message: General MIDI channel 10 is percussion.
    # MIDI key signatures know only major/minor; modes are written as their parallel major/minor.
    key = NOTE_NAMES[song.key.tonic] + ("m" if minor else "")
    meta.append(mido.MetaMessage("key_signature", key=key, time=0))
    end_tick = song.num_bars * song.bar_ticks
    meta.append(mido.MetaMessage("end_of_track", time=end_tick))
    mid.tracks.append(meta)
    for inst in song.instruments:
        track = mido.MidiTrack()
        name = (names or {}).get(inst.channel) or f"{inst.part}: {inst.style}"
        track.append(mido.MetaMessage("track_name", name=name, time=0))
        track.append(mido.Message("program_change", channel=inst.channel, program=inst.program, time=0))
        events = []
        for n in inst.notes:
            events.append((n.start, 1, n.pitch, n.velocity))
            events.append((n.start + n.duration, 0, n.pitch, 0))
        events.sort()
        now = 0
        for tick, kind, pitch, vel in events:
            msg_type = "note_on" if kind else "note_off"
            track.append(mido.Message(msg_type, channel=inst.channel, note=pitch, velocity=vel, time=tick - now))
            now = tick
        track.append(mido.MetaMessage("end_of_track", time=max(0, end_tick - now)))
        mid.tracks.append(track)
    return mid


def write_midi(song: Song, path: str | os.PathLike, names: dict[int, str] | None = None) -> None:
    song_to_midi(song, names).save(str(path))

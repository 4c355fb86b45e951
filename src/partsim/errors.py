"""Domain errors.

Every error a user can cause is a :class:`PartsimError` whose message is one line that names
the problem (a path, a value, a limit). The CLI prints it as ``partsim: error: <message>`` and
exits non-zero; later the gRPC layer maps the same classes to status codes in one place.
"""


class PartsimError(Exception):
    """Base class: a problem with the caller's input or environment, never a bug."""


class InvalidArgument(PartsimError):
    """A value given by the caller is out of range or malformed."""


class NotFound(PartsimError):
    """A file, folder or record the caller named does not exist."""


class DatasetError(PartsimError):
    """A data set on disk is incomplete, inconsistent or holds an undecodable file."""


class SoundFontError(PartsimError):
    """A SoundFont is missing, unreadable or lacks what the generator needs."""


class ResourceExhausted(PartsimError):
    """A request is larger than a configured limit (upload size, segments, top_k)."""


class FailedPrecondition(PartsimError):
    """The system is not in a state to do this (e.g. a vector from another model version)."""


class Unavailable(PartsimError):
    """A backend (Milvus, Redis, another service) cannot be reached right now; retrying may help."""


class Unauthenticated(PartsimError):
    """The caller presented no credentials, or ones that are not valid (no detail of why is given)."""


class PermissionDenied(PartsimError):
    """The caller asked for something outside what it may touch (e.g. a path outside the allowed roots)."""

"""One exception hierarchy for the grader.

Every error the grader raises on purpose derives from GraderError and carries an exit code.
The CLI turns these into one-line messages; anything else is a bug and gets a traceback.
Failures of a single submission are NOT exceptions at the batch level: they become a
result with a status (see grader.results).
"""


class GraderError(Exception):
    """An error the user can act on. `exit_code` is what the CLI exits with."""

    exit_code = 1


class ConfigError(GraderError):
    """A spec, assignment folder or command-line value is wrong."""

    exit_code = 2


class DataUnavailableError(GraderError):
    """The Fashion-MNIST files could not be found, fetched or rebuilt."""

    exit_code = 3


class DataInvalidError(GraderError):
    """Data files exist but fail validation (counts, shapes, labels)."""

    exit_code = 3


class ReferenceRunError(GraderError):
    """The reference solution failed to run, so no expected values exist."""

    exit_code = 4


class ExecutionSetupError(GraderError):
    """A kernel could not be started at all (not a student's fault)."""

    exit_code = 5


class SubmissionsNotFoundError(ConfigError):
    """`grade --submissions` names nothing, or a file (an LMS download: `grader pull` unpacks it)."""


class NoSubmissionsError(ConfigError):
    """The submissions folder holds no notebook: an empty class page would hide the mistake."""


class DataMissingError(DataUnavailableError):
    """The data files are not there yet: `grader data` (or `make data`) provisions them."""


class NotGradedError(ConfigError):
    """An output folder without a graded class (`export`, `feedback` need `grader grade` first)."""


class LmsMappingError(ConfigError):
    """A student cannot be matched to the LMS (not from a Moodle pull, no participant id)."""


class ClusterError(GraderError):
    """Grading on several machines cannot go on: no scheduler, no worker that matches, the scheduler gone.
    Results already received are kept in the gradebook; the next run resumes."""

    exit_code = 6

"""Turn off OpenVINO's usage telemetry for this process.

``openvino.convert_model`` and NNCF report usage to Google Analytics unless the user opted
out globally. They send from a worker thread that *forks* a child process: in a process
that has loaded torch, OpenVINO or JAX, a forked child can wait forever on a lock whose
owner thread was not copied (this hung the kit's CI in an OpenVINO export), and a door
kit that handles people's faces should not talk to the network behind its user's back.

The opt-out here is for this process only; the user's global choice (OpenVINO's
``opt_in_out`` tool, ``~/intel/openvino_telemetry``) is left as it is.
"""

from __future__ import annotations

import os

_done = False


def disable_openvino_telemetry() -> None:
    """Call before the first ``convert_model`` or ``import nncf``; cheap and idempotent."""
    global _done
    if _done:
        return
    # NNCF swaps in its no-op telemetry stub when this is set at import time.
    os.environ.setdefault("NNCF_CI", "1")
    try:
        import openvino_telemetry
    except ImportError:  # the edge extra may not have it: nothing can be sent then
        _done = True
        return
    cls = openvino_telemetry.Telemetry
    original_init = cls.init

    def init_without_consent(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.consent = False  # every send_event / session call checks this flag

    cls.init = init_without_consent
    # A singleton may exist already (another tool initialised it first).
    instance = getattr(cls, "_SingletonMetaClass__single_instance", None)
    if instance is not None:
        instance.consent = False
    _done = True


def import_openvino(why: str = "this step"):
    """``import openvino`` with telemetry off (the import itself sends an event).

    Raises:
        RuntimeUnavailableError: OpenVINO is not installed.
    """
    from edge.errors import RuntimeUnavailableError

    disable_openvino_telemetry()
    try:
        import openvino
    except ImportError:
        raise RuntimeUnavailableError(f"{why} needs OpenVINO: pip install openvino") from None
    return openvino

"""One module per export format (see ``quantize.formats``); each provides ``export_fp32``,
``export_int8`` and ``export_qat``, all taking a ``quantize.context.ExportContext``."""

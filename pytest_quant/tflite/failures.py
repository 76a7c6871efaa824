"""Why a conversion failed: its error, the converter's output cut to the cause, the hint to a fix.

:func:`failure_hint` reads the likely cause in the converter's output; :func:`_deterministic`
tells whether the same conversion would fail again (only those failures are cached).
"""

from __future__ import annotations

import re
import signal
import subprocess

#: Crash signals that a converter bug raises; SIGKILL (the OOM killer), SIGTERM and
#: SIGINT come from outside and are not cached as the model's failure.
_CRASH_SIGNALS = ("SIGABRT", "SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGTRAP")
#: How much of a failed converter's output the failure cache keeps (its end)
_KEPT_OUTPUT = 20_000


_LOG = re.compile(r"^[IWE]\d{4} |^WARNING: All log messages")  # absl log lines
_ERROR = re.compile(r"\b\w*(Error|Exception)\b:|LLVM ERROR|error:")
# What the converter says when a model has no ranges to quantize with: asked for int8 I/O
# without calibration (the model is not integer-quantized, so only float32 I/O is valid),
# or asked for full integer without a representative dataset.
_NO_RANGES = re.compile(
    r"must be tf\.float32|representative_dataset|calibrat|min/max|statistics", re.IGNORECASE
)
# int16x8 of a model with fake-quant nodes: those ranges are int8 and the converter
# cannot requantize them.
_FAKE_QUANT_16X8 = "16x8-bit not yet supported for op: 'DEQUANTIZE'"
# Keras 3 could not rebuild a saved .keras model (unregistered custom class, a config it
# does not accept).
_RELOAD = re.compile(
    r"Could not locate (class|function)|Unknown (layer|object)|could not be deserialized|"
    r"unexpected keyword argument"
)


# int16x8 of a model with an op that has no 16x8 kernel (HARD_SWISH, NEG, SQRT, ...)
_NO_16X8_KERNEL = re.compile(r"16x8-bit not yet supported for op: '(\w+)'")
# int16x8 of a model with integer tensors feeding integer arithmetic (token ids through
# Keras 3 Embedding's index handling: LESS, ADD, SELECT_V2; a WHILE loop's counter): TF's
# int16x8 quantizer (the legacy one, which int16x8 always uses) wants a range for them
_INT_TENSOR_16X8 = re.compile(
    r"Max and min for dynamic tensors should be recorded during calibration: "
    r"Failed for tensor (\S+)"
)
# Keras 3 LSTM/GRU (not unrolled): a while loop over TensorLists
_TENSOR_LIST = re.compile(r"TensorList\w+")


class ConversionError(RuntimeError):
    """The TFLite converter failed or crashed; the message says which, with its output."""

    #: whether the same conversion would fail the same way again (an error exit or a
    #: crash signal of the converter; not a timeout, not a kill from outside): only those
    #: failures are cached
    deterministic: bool = False
    #: the message without the hint, and the converter's output: what the cache keeps, so
    #: a replay gets the hint of the pytest-quant that replays it
    report: str = ""
    output: str = ""


def _deterministic(done: subprocess.CompletedProcess[str]) -> bool:
    """Whether the same conversion would fail again: an error exit or a crash signal; not
    a kill from outside (the OOM killer's SIGKILL, SIGTERM) or running out of memory."""
    if "MemoryError" in done.stderr or "std::bad_alloc" in done.stderr:
        return False
    if done.returncode > 0:
        return True
    try:
        return signal.Signals(-done.returncode).name in _CRASH_SIGNALS
    except ValueError:  # not a signal this platform names
        return False


#: What converts a Keras 3 LSTM/GRU (a while loop over TensorLists), measured on TF 2.21.
TENSOR_LIST_HINT = (
    "the model loops over TensorLists (a Keras 3 LSTM/GRU/RNN layer), which TFLite "
    "builtins cannot hold with a dynamic batch. What converts: (1) the layer built with "
    "unroll=True (needs a fixed sequence length): builtins only, every mode, any batch "
    "size; (2) converter_options={'_experimental_default_to_single_batch_in_tensor_list_"
    "ops': True}: a WHILE loop, float/dynamic/float16/int8 (not int16x8), runs with batch "
    "size 1 only; (3) converter_options={'_experimental_lower_tensor_list_ops': False, "
    "'target_spec.supported_ops': ['TFLITE_BUILTINS', 'SELECT_TF_OPS']}: float, dynamic "
    "and float16 convert (not int8/int16x8: calibration cannot run Select TF ops), but "
    "need the Flex delegate, which ai-edge-litert does not ship. A fixed "
    "batch size (keras.Input(batch_size=1)) is not enough: via='saved_model' fails the "
    "same way, via='keras' converts float but the int8 conversion crashed"
)


def failure_hint(output: str, *, mode: str, calibrated: bool, entry: str) -> str:
    """The likely cause of a failed conversion and its fix, read from the converter's
    ``output`` (``entry``: the ``TFLiteConverter`` constructor that ran); ``""`` when the
    output names no cause we know: no guess.

    Example::

        >>> failure_hint("LLVM ERROR: Failed to infer result type(s).", mode="int8",
        ...              calibrated=False, entry="from_concrete_functions")
        ''
    """
    if mode == "int8" and not calibrated and _NO_RANGES.search(output):
        return (
            "int8 without representative_data works only for a model trained with "
            "fake-quant nodes (QAT); otherwise pass representative_data (a few hundred "
            "real inputs)"
        )
    if mode == "int16x8" and _FAKE_QUANT_16X8 in output:
        return (
            "the model has fake-quant (QAT) nodes, whose ranges are int8: convert it with "
            "mode='int8', or convert the float model (before QAT) to int16x8"
        )
    if mode == "int16x8" and (op := _NO_16X8_KERNEL.search(output)):
        return (
            f"{op.group(1)} has no int16x8 kernel in this TensorFlow: pass "
            "float_fallback=True to keep such ops in float (between DEQUANTIZE and "
            "QUANTIZE; an int16-only target cannot run the result), or use mode='int8'"
        )
    if mode == "int16x8" and (tensor := _INT_TENSOR_16X8.search(output)):
        return (
            f"TF's int16x8 quantizer wants a calibrated range for {tensor.group(1)}, an "
            "integer tensor (an integer input such as token ids, which Keras 3's Embedding "
            "adds to and selects on, or a loop counter), and calibration records none for "
            "integer tensors: this TensorFlow cannot convert the model to int16x8, "
            "float_fallback=True or not; use mode='int8', 'dynamic' or 'float16'"
        )
    if _TENSOR_LIST.search(output):
        return TENSOR_LIST_HINT
    if entry == "from_keras_model" and _RELOAD.search(output):
        return (
            "via='keras' reloads the .keras file with Keras 3 in the converter process: "
            "register the model's custom classes (keras.saving.register_keras_serializable) "
            "or pass via='saved_model', which needs no reload"
        )
    return ""


def _failure(done: subprocess.CompletedProcess[str], action: str, version: str) -> str:
    lines = [ln for ln in done.stderr.splitlines() if ln.strip() and not _LOG.match(ln)]
    interesting = [ln for ln in lines if _ERROR.search(ln)]
    tail = "\n".join("    " + ln for ln in (interesting[-3:] or lines[-5:]))
    if done.returncode < 0:
        sig = signal.Signals(-done.returncode).name
        how = f"crashed (the converter process was killed by {sig})"
    else:
        how = f"failed (exit status {done.returncode})"
    return f"TensorFlow {version} converter {how} {action}. Converter output:\n{tail}"

"""How a simulated prompt fails: the errors a node raises, with tracebacks formatted as the real server's."""

from __future__ import annotations

from comfywatch.sim.faults import Fault

__all__ = [
    "EXECUTE_FRAMES",
    "REGEX_TRACEBACK_TAIL",
    "RUNTIME_TRACEBACK_TAIL",
    "VALIDATION_TRACEBACK",
    "NodeFailure",
    "fault_failure",
    "full_type_name",
]

# Tracebacks as the real server formats them (paths from the recording machine).
VALIDATION_TRACEBACK = [
    '  File "/opt/ComfyUI/execution.py", line 1010, in validate_prompt\n'
    "    m = await validate_inputs(prompt_id, prompt, o, validated)\n"
    "        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n",
    '  File "/opt/ComfyUI/execution.py", line 788, in validate_inputs\n'
    "    o_class_type = prompt[o_id]['class_type']\n"
    "                   ~~~~~~^^^^^^\n",
]
EXECUTE_FRAMES = [
    '  File "/opt/ComfyUI/execution.py", line 496, in execute\n'
    "    output_data, output_ui, has_subgraph, has_pending_tasks = await get_output_data("
    "prompt_id, unique_id, obj, input_data_all, execution_block_cb=execution_block_cb, "
    "pre_execute_cb=pre_execute_cb, hidden_inputs=hidden_inputs)\n",
    '  File "/opt/ComfyUI/execution.py", line 315, in get_output_data\n'
    "    return_values = await _async_map_node_over_list(prompt_id, unique_id, obj, input_data_all, "
    "obj.FUNCTION, allow_interrupt=True, execution_block_cb=execution_block_cb, "
    "pre_execute_cb=pre_execute_cb, hidden_inputs=hidden_inputs)\n",
    '  File "/opt/ComfyUI/execution.py", line 289, in _async_map_node_over_list\n'
    "    await process_inputs(input_dict, i)\n",
    '  File "/opt/ComfyUI/execution.py", line 277, in process_inputs\n    result = f(**inputs)\n',
]
REGEX_TRACEBACK_TAIL = [
    '  File "/opt/ComfyUI/comfy_api/internal/__init__.py", line 149, in wrapped_func\n'
    "    return method(locked_class, **inputs)\n",
    '  File "/opt/ComfyUI/comfy_api/latest/_io.py", line 1270, in EXECUTE_NORMALIZED\n'
    "    to_return = cls.execute(*args, **kwargs)\n",
    '  File "/opt/ComfyUI/comfy_extras/nodes_string.py", line 363, in execute\n'
    "    result = re.sub(regex_pattern, replace, string, count=count, flags=flags)\n",
    '  File "/usr/lib/python3.11/re/__init__.py", line 185, in sub\n'
    "    return _compile(pattern, flags).sub(repl, string, count)\n",
    '  File "/usr/lib/python3.11/re/__init__.py", line 294, in _compile\n    p = _compiler.compile(pattern, flags)\n',
]
_OOM_TRACEBACK_TAIL = [
    '  File "/opt/ComfyUI/nodes.py", line 1525, in sample\n'
    "    return common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, "
    "latent_image, denoise=denoise)\n",
    '  File "/opt/ComfyUI/comfy/ldm/modules/attention.py", line 470, in attention_pytorch\n'
    "    out = comfy.ops.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, "
    "is_causal=False)\n",
]
RUNTIME_TRACEBACK_TAIL = [
    '  File "/opt/ComfyUI/comfy/ops.py", line 94, in forward\n'
    "    return torch.nn.functional.linear(input, weight, bias)\n",
]
OOM_MESSAGE = (
    "Allocation on device 0 would exceed allowed memory. (out of memory)\n"
    "Currently allocated     : 21.87 GiB\n"
    "Requested               : 1.50 GiB\n"
    "Device limit            : 23.64 GiB\n"
    "Free (according to CUDA): 19.06 MiB\n"
    "PyTorch limit (set by user-supplied memory fraction)\n"
    "                        : 17179869184.00 GiB"
)
_OOM_TIPS = (
    "This error means you ran out of memory on your GPU.\n\n"
    "TIPS: If the workflow worked before you might have accidentally set the batch_size to a large number."
)
RUNTIME_ERROR_MESSAGE = "mat1 and mat2 shapes cannot be multiplied (77x768 and 1024x320)"


def full_type_name(kind: type) -> str:
    """An exception's type as ComfyUI reports it: builtins bare, anything else with its module."""
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


class NodeFailure(Exception):
    """A node raised while executing; carries the formatted error details."""

    def __init__(self, exception_type: str, message: str, traceback: list[str]) -> None:
        super().__init__(message)
        self.exception_type = exception_type
        self.message = message
        self.traceback = traceback


def fault_failure(faults: frozenset[Fault]) -> NodeFailure:
    """What a job-failure fault raises in the busy node: CUDA out of memory, or a shape mismatch."""
    if Fault.OOM in faults:
        return NodeFailure(
            "torch.OutOfMemoryError", f"{OOM_MESSAGE}\n{_OOM_TIPS}", EXECUTE_FRAMES + _OOM_TRACEBACK_TAIL
        )
    return NodeFailure("RuntimeError", f"{RUNTIME_ERROR_MESSAGE}\n", EXECUTE_FRAMES + RUNTIME_TRACEBACK_TAIL)

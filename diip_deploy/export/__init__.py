"""Export side (torch, diffusers, onnx): load a diffusers UNet, trace its forward and
gradient graphs to ONNX, verify them against torch autograd, build TensorRT engines,
and write the manifest the runtime trusts."""

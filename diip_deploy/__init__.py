"""diip-deploy: blind image restoration with the Diffusion Image Prior (DIIP).

`diip_deploy.runtime` restores images with numpy + ONNX Runtime/TensorRT and never
imports torch; `diip_deploy.export` (torch, diffusers, onnx) turns a diffusers UNet
into the graphs and manifest the runtime trusts; `diip_deploy.schedule` holds the
DDIM arithmetic that both sides share.
"""

__version__ = "0.1.0"

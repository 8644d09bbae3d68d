#!/bin/bash
# Delta-LLaVA on your own task with LoRA: rank 128, alpha 256, lr 2e-4 for the adapters and 2e-5 for
# the projector, on a trained Delta-LLaVA checkpoint; 8 GPUs x 16, ZeRO-3. Answer with --model-path the
# output --model-base ./checkpoints/llava-v1.5-7b-delta (the checkpoint trained on), or merge it first.
# Your own data: DATA_PATH=your.json IMAGE_FOLDER=your/images (LLaVA format, docs/training.md);
# MODEL=another checkpoint, OUTPUT_DIR=where to save. Multi-node: HOSTFILE=... (see docs/training.md).

deepspeed ${HOSTFILE:+--hostfile "$HOSTFILE"} ${LAUNCHER:+--launcher "$LAUNCHER"} llava/train/train_mem.py \
    --lora_enable True \
    --lora_r 128 \
    --lora_alpha 256 \
    --mm_projector_lr 2e-5 \
    --deepspeed ./scripts/zero3.json \
    --model_name_or_path "${MODEL:-./checkpoints/llava-v1.5-7b-delta}" \
    --version v1 \
    --data_path "${DATA_PATH:-./playground/data/llava_v1_5_mix665k.json}" \
    --image_folder "${IMAGE_FOLDER:-./playground/data}" \
    --vision_tower openai/clip-vit-large-patch14-336 \
    --mm_projector_type delta \
    --scale_factor 2 \
    --mm_delta_rank 16 \
    --mm_delta_layers 12,16,22,23 \
    --mm_vision_select_layer -2 \
    --mm_use_im_start_end False \
    --mm_use_im_patch_token False \
    --image_aspect_ratio pad \
    --group_by_modality_length True \
    --bf16 True \
    --output_dir "${OUTPUT_DIR:-./checkpoints/llava-v1.5-7b-delta-task-lora}" \
    --num_train_epochs 1 \
    --per_device_train_batch_size 16 \
    --per_device_eval_batch_size 4 \
    --gradient_accumulation_steps 1 \
    --evaluation_strategy "no" \
    --save_strategy "steps" \
    --save_steps 50000 \
    --save_total_limit 1 \
    --learning_rate 2e-4 \
    --weight_decay 0. \
    --warmup_ratio 0.03 \
    --lr_scheduler_type "cosine" \
    --logging_steps 1 \
    --tf32 True \
    --model_max_length 2048 \
    --gradient_checkpointing True \
    --dataloader_num_workers 4 \
    --lazy_preprocess True \
    --report_to "${REPORT_TO:-wandb}"

#!/bin/bash
# Delta-LLaVA stage 2 (arXiv 2512.18910): instruction tuning on mix665k from the stage-1 delta projector,
# LLM and projector trained. 8 GPUs x 16 = batch 128, lr 2e-5, ZeRO-3.
# Multi-node: HOSTFILE=scripts/hostfile bash scripts/v1_5/finetune_delta.sh (see docs/training.md).

deepspeed ${HOSTFILE:+--hostfile "$HOSTFILE"} ${LAUNCHER:+--launcher "$LAUNCHER"} llava/train/train_mem.py \
    --deepspeed ./scripts/zero3.json \
    --model_name_or_path lmsys/vicuna-7b-v1.5 \
    --version v1 \
    --data_path ./playground/data/llava_v1_5_mix665k.json \
    --image_folder ./playground/data \
    --vision_tower openai/clip-vit-large-patch14-336 \
    --pretrain_mm_mlp_adapter ./checkpoints/llava-v1.5-7b-delta-pretrain/mm_projector.bin \
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
    --output_dir ./checkpoints/llava-v1.5-7b-delta \
    --num_train_epochs 1 \
    --per_device_train_batch_size 16 \
    --per_device_eval_batch_size 4 \
    --gradient_accumulation_steps 1 \
    --evaluation_strategy "no" \
    --save_strategy "steps" \
    --save_steps 50000 \
    --save_total_limit 1 \
    --learning_rate 2e-5 \
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

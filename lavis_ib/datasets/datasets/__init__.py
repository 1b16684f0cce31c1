"""Dataset classes by annotation-format family, with LAVIS's signature (vis_processor=,
text_processor=, vis_root=, ann_paths=), so builders and LAVIS-style code construct any alike.

One module per family of formats; the readers of the official files live beside the classes.
"""
# base            BadSample, BaseDataset (epoch-encoded indices, seeded draws), collate
# annotations     JSON/JSONL/CSV readers with clear errors; OCR-token files
# caption         CaptionDataset / CaptionEvalDataset (LAVIS lists, COCO-style, TextCaps)
# vqa_formats     readers of VQAv2/OK-VQA, A-OKVQA, OCR-VQA, GQA, TextVQA, VizWiz, LAVIS lists
# vqa             VQADataset, QGDataset (training), VQAEvalDataset
# multiple_choice ScienceQA / IconQA (MultipleChoiceDataset, MultipleChoiceEvalDataset)
# classification  Hateful Memes / VSR (ClassificationEvalDataset)
# dialog          Visual Dialog (VisDialEvalDataset)
# llava           LLaVA-Instruct-150K (LlavaDataset, one sample per assistant turn)
# video_qa        MSVD-QA / MSRVTT-QA / iVQA (VideoQADataset, VideoQAEvalDataset)
# webdataset_caption  Web CapFilt shards (WebCaptionDataset, iterable)
# vg_caption      Visual Genome region captions (VGCaptionDataset, pretraining)
# retrieval       COCO / Flickr30K retrieval (RetrievalDataset, RetrievalEvalDataset)
# image_keys      int64 image keys shared by an image's captions (contrastive losses)

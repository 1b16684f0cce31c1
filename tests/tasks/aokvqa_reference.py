"""Our transcriptions of the two A-OKVQA scorers, written from their sources.

`official`: `eval_aokvqa(dataset, preds, multiple_choice, strict=False)` of
allenai/aokvqa `evaluation/eval_predictions.py` at commit 42e8c44 (its latest): direct
answer keeps only questions whose `difficult_direct_answer` is False and scores
min(1, #(pred == direct answer) / 3) on raw strings; multiple choice scores
pred == choices[correct_choice_idx] over every question; a missing prediction scores 0.
`lavis`: LAVIS's `AOKVQATask._report_metrics`: the same direct-answer rule over every
question.
"""


def official(dataset, preds, multiple_choice):
    dataset = {d["question_id"]: d for d in dataset}
    if not multiple_choice:
        dataset = {k: v for k, v in dataset.items() if v["difficult_direct_answer"] is False}
    acc = []
    for q in dataset:
        if q not in preds:
            acc.append(0.0)
            continue
        pred = preds[q]
        if multiple_choice:
            acc.append(float(pred == dataset[q]["choices"][dataset[q]["correct_choice_idx"]]))
        else:
            num_match = sum([pred == da for da in dataset[q]["direct_answers"]])
            acc.append(min(1.0, num_match / 3.0))
    return sum(acc) / len(acc) * 100


def lavis(dataset, preds):
    acc = []
    for d in dataset:
        num_match = sum([preds[d["question_id"]] == gt for gt in d["direct_answers"]])
        acc.append(min(1.0, num_match / 3.0))
    return sum(acc) / len(acc) * 100

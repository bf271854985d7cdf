"""Making the plan: pinning each source and reading its metadata once (`sources`, `checkpoint`, `tokenizer_files`,
`chat_templates`), every check and decision (`planner`), the plan as data and as JSON (`plan`: the λ of every
tensor is decided here), its text (`report`), and plan.json as a lock (`lock`).
"""

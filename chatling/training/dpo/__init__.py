"""Preference training after SFT: pairs from the streamer's marks (``preference``)
or from the chat itself (``contrast``), trained with DPO (``dpo``)."""

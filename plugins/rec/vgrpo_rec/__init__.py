"""vgrpo-rec: a built-in vgrpo task plugin (under construction in this commit)."""

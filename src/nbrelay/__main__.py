from nbrelay.cli import app

app(prog_name="nbrelay")

from flask import Blueprint

api = Blueprint("api", __name__)

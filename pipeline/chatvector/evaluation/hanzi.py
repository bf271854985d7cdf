"""Traditional or Simplified? A script check for Chinese text, which the language identifier calls "zh" either way.

The table pairs common characters whose Traditional and Simplified forms differ (the Traditional form first).
Only pairs where each form belongs to one script are listed: characters such as 后, 里, 云, 干 or 准 are also
ordinary Traditional characters with another meaning, so they would count for the wrong side and are left out.
A text is Traditional when it holds more Traditional-only than Simplified-only characters, Simplified in the
opposite case, and undecided when there is no evidence either way (or as much for each).
"""

from __future__ import annotations

import functools

# (Traditional, Simplified) pairs, written as one string of Traditional characters and one of Simplified ones.
_PAIRS = (
    ("們個這來時會說對國學電話語門開關東車長見現點還進過問題號樣應經發當體頭麼為與從動種義實業機氣總區萬歲書買賣讀寫認識讓謝請試議論計記許設證該運邊遠選連達際陽陰隊雙難靈風飛飯館馬魚鳥麗齊歡樂愛夢變蘭藝節藥華興舊衛術親覺觀貓貝負財貨質購費資趕軟輕較載輸轉農辦鐘錢錯鐵銀間聞閱陸階隨險雜雞離頁順須預領頻顏額願顯驗黨團園圖圓場塊報壞聲處備傳價億優兒兩凍劇劍勞勢勵參嗎嚴壓婦媽孫寧寶導將層屬島帶師幫廣廳張彈態慣憶戰戲擁擇據擊敵數斷晝曉條極構標橋檢權歷殺決沒況淨溫測滿漢灣災無熱燈爭爺牆獎獨環產畫療盡監盤確礎禮稱穩競筆簡糧紅級紀約紙細組結給統絕網線練績緒續罷習聽職腦舉艱蘋蟲補裝規視覽觸訂訊訓講謎豐貴賽趙躍軍輪輛辭鄉醫針鎮鏡閉閃陳雖靜響頂項顧駕騎驚鮮鹽麥黃齒龍龜養釋郵鍋烏帳憂詐騙掃潔劑鄰執溝紹",
     "们个这来时会说对国学电话语门开关东车长见现点还进过问题号样应经发当体头么为与从动种义实业机气总区万岁书买卖读写认识让谢请试议论计记许设证该运边远选连达际阳阴队双难灵风飞饭馆马鱼鸟丽齐欢乐爱梦变兰艺节药华兴旧卫术亲觉观猫贝负财货质购费资赶软轻较载输转农办钟钱错铁银间闻阅陆阶随险杂鸡离页顺须预领频颜额愿显验党团园图圆场块报坏声处备传价亿优儿两冻剧剑劳势励参吗严压妇妈孙宁宝导将层属岛带师帮广厅张弹态惯忆战戏拥择据击敌数断昼晓条极构标桥检权历杀决没况净温测满汉湾灾无热灯争爷墙奖独环产画疗尽监盘确础礼称稳竞笔简粮红级纪约纸细组结给统绝网线练绩绪续罢习听职脑举艰苹虫补装规视览触订讯训讲谜丰贵赛赵跃军轮辆辞乡医针镇镜闭闪陈虽静响顶项顾驾骑惊鲜盐麦黄齿龙龟养释邮锅乌帐忧诈骗扫洁剂邻执沟绍"),
)
TRADITIONAL_ONLY = frozenset(_PAIRS[0][0])
SIMPLIFIED_ONLY = frozenset(_PAIRS[0][1])


@functools.lru_cache(maxsize=1)
def pairs() -> tuple[tuple[str, str], ...]:
    """The table as (Traditional, Simplified) character pairs."""
    traditional, simplified = _PAIRS[0]
    return tuple(zip(traditional, simplified, strict=True))


def script_counts(text: str) -> tuple[int, int]:
    """(Traditional-only, Simplified-only) characters in `text`."""
    return sum(ch in TRADITIONAL_ONLY for ch in text), sum(ch in SIMPLIFIED_ONLY for ch in text)


def chinese_script(text: str) -> str | None:
    """"Hant", "Hans", or None when the text gives no evidence either way."""
    traditional, simplified = script_counts(text)
    if traditional == simplified:
        return None
    return "Hant" if traditional > simplified else "Hans"
